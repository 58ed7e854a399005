"""Ferry's custom search attributes (Keyword): what SREs filter on in the Temporal UI.

`ferry dev up` and docker-compose register exactly these.
"""

from temporalio.common import SearchAttributeKey

FERRY_ENVIRONMENT = SearchAttributeKey.for_keyword("FerryEnvironment")
FERRY_REPOSITORY = SearchAttributeKey.for_keyword("FerryRepository")
FERRY_VERSION = SearchAttributeKey.for_keyword("FerryVersion")
FERRY_PHASE = SearchAttributeKey.for_keyword("FerryPhase")
FERRY_PUBLISHER = SearchAttributeKey.for_keyword("FerryPublisher")
# What an environment follows ("version 1.2.3", "semver >=1.0.0"): `ferry env list` reads it from Visibility.
FERRY_TRACKING = SearchAttributeKey.for_keyword("FerryTracking")

ALL = [FERRY_ENVIRONMENT, FERRY_REPOSITORY, FERRY_VERSION, FERRY_PHASE, FERRY_PUBLISHER, FERRY_TRACKING]
