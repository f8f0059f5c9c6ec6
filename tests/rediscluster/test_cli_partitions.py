"""``arcana jobs`` (stats, dead, retry) as a process, on the cluster with three queue
partitions: the operator's view covers every partition."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

from arcana.adapters.jobqueue.partitioned import PartitionedRedisJobQueue
from arcana.adapters.redis_client import connect_redis, prepare_redis
from arcana.domain.jobs import JobRequest, JobStatus
from tests.e2e.test_worker_process import run_cli
from tests.rediscluster.cluster import LocalCluster


async def test_jobs_commands_over_three_partitions(
    redis_cluster: LocalCluster, pg_url: str, tmp_path: Path
) -> None:
    prefix = f"cli-{uuid.uuid4().hex[:8]}"
    env = {
        "ARCANA_DATABASE_URL": pg_url,
        "ARCANA_REDIS_URL": redis_cluster.url,
        "ARCANA_REDIS_PREFIX": prefix,
        "ARCANA_QUEUE_PARTITIONS": "3",
        "ARCANA_VAR_DIR": str(tmp_path / "var"),
        "ARCANA_GRPC_PORT": "0",
    }
    redis = connect_redis(redis_cluster.url)
    await prepare_redis(redis)
    queue = PartitionedRedisJobQueue(redis, prefix, 3, finished_ttl=60)
    try:
        await queue.enqueue_many([JobRequest("system.noop") for _ in range(9)])
        doomed = await queue.enqueue(JobRequest("system.echo", max_retries=0))
        leased = await queue.fetch("w", 20, 30)
        assert doomed.id in {j.id for j in leased}
        assert await queue.fail("w", doomed.id, "boom", 0) is JobStatus.DEAD
        assert await queue.release("w", [j.id for j in leased if j.id != doomed.id]) == 9

        stats = json.loads(run_cli(["jobs", "stats", "--json"], env, tmp_path).stdout)
        assert (stats["depth"]["NORMAL"], stats["dead"]) == (9, 1)
        dead = json.loads(run_cli(["jobs", "dead", "--json"], env, tmp_path).stdout)
        assert [j["id"] for j in dead["data"]] == [doomed.id]
        out = run_cli(["jobs", "retry", doomed.id], env, tmp_path)
        assert out.returncode == 0, out.stderr
        retried = await queue.get(doomed.id)
        assert retried is not None
        assert (retried.status, retried.retry_count) == (JobStatus.QUEUED, 1)
    finally:
        await redis.aclose()
