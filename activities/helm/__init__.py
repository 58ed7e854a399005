"""The Helm adapter: the real helm v4 binary (`make helm`), run hermetic and bounded.

- ``binary.helm_path()``: FERRY_HELM, else `make helm`'s cache path; HelmMissing names `make helm`.
- ``render.render_chart(chart_dir, HelmRenderInput, root)``: `helm template` of a chart directory with no network, no
  plugins, no credentials, its time, memory and output bounded, sorted into CRDs, manifests and hooks
  (ferry.helm_render.Rendered). Every refusal is a BundleError (RENDER_FAILED on the reconcile path).
Not wired yet: the environment spec's ``helm:`` field, the reconcile's render call and hook execution.
"""

from activities.helm.binary import HELM_VERSION, HelmMissing, helm_path
from activities.helm.render import HELM_MAX_ADDRESS_SPACE, HELM_TIMEOUT, check_chart, render_chart

__all__ = [
    "HELM_MAX_ADDRESS_SPACE",
    "HELM_TIMEOUT",
    "HELM_VERSION",
    "HelmMissing",
    "check_chart",
    "helm_path",
    "render_chart",
]
