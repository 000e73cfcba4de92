"""Text an operator reads: the exact plan (``--dry-run``), the summary table and next steps.

Secret references are shown (they say where keys live); key values never are — the plan
objects do not even expose them to this module except through ``AwsCredential``, whose
``repr`` hides them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from app.fence_config.mapping import PENDING_CREDENTIALS, PENDING_LABEL
from app.migration.plan import ChangeKind, ImportPlan, PlannedChange
from app.registry.records import BUCKET_FIELDS, SELF_SERVICE_FIELDS

_MARKS = {"create": "+", "update": "~", "unchanged": "=", "skip": "-", "invalid": "!"}
_SHOWN_ON_CREATE = (
    *(f for f in BUCKET_FIELDS if f not in ("name", "labels")),
    *SELF_SERVICE_FIELDS,
    "labels",
)


def _value(value: Any) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k}={v}" for k, v in sorted(value.items())) or "{}"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def render_plan(plan: ImportPlan) -> str:

    counts = ", ".join(
        f"{plan.count(kind)} {label}"
        for kind, label in (
            (ChangeKind.CREATE, "to create"),
            (ChangeKind.UPDATE, "to update"),
            (ChangeKind.UNCHANGED, "unchanged"),
            (ChangeKind.SKIP, "skipped"),
            (ChangeKind.INVALID, "invalid"),
        )
    )
    lines = [
        f"Import plan for {plan.source}",
        f"  {counts}; {len(plan.secret_writes)} secret(s) to write",
        "",
    ]
    for change in plan.changes:
        lines.extend(_render_change(change))
    if plan.secrets:
        lines += ["", "Secrets (key values are never printed):"]
        width = max(len(action.state.value) for action in plan.secrets)
        for action in plan.secrets:
            state = action.state.value
            lines.append(f"  {state:<{width}}  {action.ref}  (AWS_CREDENTIALS.{action.cred_name})")
    if plan.warnings:
        lines += ["", "Warnings:"] + [f"  {warning}" for warning in plan.warnings]
    if plan.is_noop and not plan.invalid:
        lines += ["", "Nothing to change: the registry already matches the file."]
    return "\n".join(lines) + "\n"


def _render_change(change: PlannedChange) -> list[str]:
    kind = change.kind.value
    head = f"{_MARKS[kind]} {kind:<9} {change.name}  ({change.source})"
    if change.kind.value in ("skip", "invalid"):
        return [head, f"    {change.reason}"]
    lines = [head]
    if change.kind.value == "create":
        width = max(len(key) for key in _SHOWN_ON_CREATE)
        for key in _SHOWN_ON_CREATE:
            value = change.row.get(key)
            if value is None or value is False or value == {}:
                continue
            lines.append(f"    {key:<{width}}  {_value(value)}")
    for key, (before, after) in change.diff.items():
        lines.append(f"    {key}: {_value(before)} -> {_value(after)}")
    lines += [f"    + prefix {prefix}" for prefix in change.add_prefixes]
    lines += [f"    + binding {binding.describe()}" for binding in change.add_bindings]
    lines += [
        f"    ~ binding {binding.describe()} (was [{','.join(sorted(ops))}])"
        for ops, binding in change.set_bindings
    ]
    lines += [f"    note: {note}" for note in change.notes]
    return lines


def render_summary(plan: ImportPlan, *, applied: bool) -> str:
    """The closing table, one row per entry, and what the operator has to do next."""
    verbs = {
        "create": ("would create", "created"),
        "update": ("would update", "updated"),
        "unchanged": ("unchanged", "unchanged"),
        "skip": ("skipped", "skipped"),
        "invalid": ("invalid", "invalid"),
    }
    rows = [("BUCKET", "SOURCE", "RESULT", "STATUS", "AUTH", "NEEDS")]
    for change in plan.changes:
        rows.append(
            (
                change.name,
                change.source,
                verbs[change.kind.value][1 if applied else 0],
                change.status or "-",
                str(change.row.get("auth_mode") or "-"),
                _needs(change),
            )
        )
    lines = ["", "Summary" + ("" if applied else " (dry run: nothing was written)")]
    lines += _table(rows)
    steps = next_steps(plan)
    if steps:
        lines += ["", "Next steps:"] + [f"  - {step}" for step in steps]
    return "\n".join(lines) + "\n"


def _needs(change: PlannedChange) -> str:
    if change.kind.value == "invalid":
        return "fix the entry (see above)"
    if change.kind.value == "skip":
        return "manual step (see above)"
    if (change.row.get("labels") or {}).get(PENDING_LABEL) == PENDING_CREDENTIALS:
        return "keys in the secrets backend"
    return "-"


def next_steps(plan: ImportPlan) -> list[str]:
    steps: list[str] = []
    pending = [
        change
        for change in plan.changes
        if (change.row.get("labels") or {}).get(PENDING_LABEL) == PENDING_CREDENTIALS
        and change.secret is not None
    ]
    for change in pending:
        assert change.secret is not None
        steps.append(
            f"{change.name} is suspended until the keys of AWS_CREDENTIALS."
            f"{change.secret.cred_name} are at {change.secret.ref}: run the import again with"
            " --write-secrets, or store {access_key_id, secret_access_key} there yourself and"
            " run the import again (it resumes the bucket)"
        )
    if any(change.kind.value == "skip" for change in plan.changes):
        steps.append("skipped entries are not registered; each reason above names the manual step")
    if plan.invalid:
        steps.append("the import was refused: fix the invalid entries (or the allow-list) first")
    if any(change.writes for change in plan.changes):
        steps.append(
            "check the new registrations: bucket-registry validate --all, then bind buckets to"
            " the projects whose users need them (POST /admin/buckets/{name}/bindings)"
        )
    return steps


def _table(rows: Sequence[tuple[str, ...]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]
