"""``bucket-registry validate``: the nightly drift check over every active bucket.

Runs ``BucketProbe`` against each bucket with bounded concurrency and reports the failures.
It reads the registry and the stores and changes nothing, unless asked to ``record`` each
result as the bucket's last validation (``source: drift``), which is all the console's health
page needs to show drift; recording changes no status, version or audit trail.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterable
from dataclasses import dataclass

from app.errors import RegistryError
from app.health.probe import BucketProbe, CheckResult, ProbeReport
from app.health.selfservice import validation_result
from app.registry.records import BucketStatus
from app.registry.service import BucketFilter, RegistryService

# Marks a stored validation that the drift check made (not a validate call).
DRIFT_SOURCE = "drift"


@dataclass(frozen=True, slots=True)
class DriftResult:
    reports: list[ProbeReport]

    @property
    def failures(self) -> list[ProbeReport]:
        return [report for report in self.reports if not report.ok]

    def as_json(self) -> str:
        return json.dumps(
            {
                "checked": len(self.reports),
                "failed": len(self.failures),
                "buckets": [
                    {
                        "bucket": report.bucket,
                        "ok": report.ok,
                        "checks": {
                            name: {"status": check.status, "reason": check.reason}
                            for name, check in report.checks.items()
                        },
                    }
                    for report in self.reports
                ],
            },
            indent=2,
        )

    def as_table(self) -> str:
        lines = [f"checked {len(self.reports)} bucket(s), {len(self.failures)} failing"]
        if self.failures:
            width = max(len(report.bucket) for report in self.failures)
            lines.append(f"{'BUCKET'.ljust(width)}  FAILED CHECK: REASON")
            for report in self.failures:
                for error in report.errors:
                    lines.append(f"{report.bucket.ljust(width)}  {error}")
        return "\n".join(lines)


async def active_bucket_names(registry: RegistryService) -> list[str]:
    names: list[str] = []
    cursor = None
    while True:
        page = await registry.list_buckets(BucketFilter(status=BucketStatus.ACTIVE), 500, cursor)
        names += [bucket.name for bucket in page.items]
        if page.next_cursor is None:
            return names
        cursor = page.next_cursor


async def check_buckets(
    registry: RegistryService,
    probe: BucketProbe,
    names: Iterable[str],
    *,
    concurrency: int = 8,
    write_probe: bool = False,
    record: bool = False,
) -> DriftResult:
    gate = asyncio.Semaphore(max(1, concurrency))

    async def one(name: str) -> ProbeReport:
        async with gate:
            try:
                snapshot = await registry.load_record(name)
            except RegistryError as exc:
                report = ProbeReport(name)
                report.checks["registered"] = CheckResult("fail", exc.message)
                return report
            report = await probe.run(snapshot, write_probe=write_probe)
            if record:
                result = validation_result(report, secret_ref=snapshot.secret_ref)
                result["source"] = DRIFT_SOURCE
                await registry.store_validation(name, result)
            return report

    return DriftResult(list(await asyncio.gather(*(one(name) for name in names))))
