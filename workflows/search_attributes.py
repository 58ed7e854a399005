"""Ferry's custom search attributes (Keyword), typed for workflows: the names are `ferry.names.SearchAttribute`.

`ferry dev up` and docker-compose register exactly these.
"""

from temporalio.common import SearchAttributeKey

from ferry.names import SearchAttribute

FERRY_ENVIRONMENT = SearchAttributeKey.for_keyword(SearchAttribute.ENVIRONMENT.value)
FERRY_REPOSITORY = SearchAttributeKey.for_keyword(SearchAttribute.REPOSITORY.value)
FERRY_VERSION = SearchAttributeKey.for_keyword(SearchAttribute.VERSION.value)
FERRY_PHASE = SearchAttributeKey.for_keyword(SearchAttribute.PHASE.value)
FERRY_PUBLISHER = SearchAttributeKey.for_keyword(SearchAttribute.PUBLISHER.value)
# What an environment follows ("version 1.2.3", "semver >=1.0.0"): `ferry env list` reads it from Visibility.
FERRY_TRACKING = SearchAttributeKey.for_keyword(SearchAttribute.TRACKING.value)

ALL = [FERRY_ENVIRONMENT, FERRY_REPOSITORY, FERRY_VERSION, FERRY_PHASE, FERRY_PUBLISHER, FERRY_TRACKING]
