"""gateway.pools: retired pools that stay retired."""

from __future__ import annotations

import pytest
from yarl import URL

from gateway.config import Upstream
from gateway.errors import ServiceUnavailable
from gateway.pools import UpstreamPools


async def test_a_retired_pool_opens_no_new_client() -> None:
    pools = UpstreamPools({"live": Upstream(name="live", url=URL("http://127.0.0.1:9"))})
    client = pools.client("live")
    await pools.close()
    assert client.closed
    with pytest.raises(ServiceUnavailable):
        pools.client("live")
