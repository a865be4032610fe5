"""Money events survive an OS crash or power loss: the NATS servers the project runs for use
(routewise dev, compose) fsync every JetStream write before acknowledging it, instead of NATS's
default of every two minutes (which loses acknowledged writes: Jepsen, NATS 2.12). The test
suite's own throwaway servers do not."""

from __future__ import annotations

from pathlib import Path

import httpx

from routewise.dev.embedded import EmbeddedNats


def test_the_embedded_nats_of_routewise_dev_syncs_every_write(tmp_path: Path) -> None:
    server = EmbeddedNats(tmp_path / "nats")
    server.start()
    try:
        config = httpx.get(f"{server.monitor_url}/varz", timeout=5).json()["jetstream"]["config"]
    finally:
        server.stop()
    assert config["sync_always"] is True
    assert Path(config["store_dir"]).is_relative_to(tmp_path)
