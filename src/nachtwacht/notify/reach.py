"""Who the configured channels can reach: one answer for the timeline, health, pages and checks.

A page reaches a person when a per-contact channel has their address (`email` for email
channels, `phone` for SMS) or when a broadcast channel (webhook, chat) carries it, since those
post one message naming everyone paged. Everything here reads the config only, except where a
caller passes the messages it composed, so `/healthz`, `status`, `doctor`, `config validate`
and the dashboard agree without touching the store.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from nachtwacht.config.schema import Settings
from nachtwacht.incidents.models import EscalationStep
from nachtwacht.notify.outbox import OutboundMessage
from nachtwacht.oncall.models import Contact

PER_CONTACT = {"email": "email", "sms": "phone"}  # channel kind -> the contact field it needs
NO_CHANNEL = "no notification channel is configured (notify.channels)"
NOBODY = f"{NO_CHANNEL}: nobody can be paged"


def who(contact: Contact) -> str:
    """`Tina Techlead (technical_lead)`: the name and the roles, as the timeline says it."""
    return f"{contact.name} ({', '.join(contact.roles)})" if contact.roles else contact.name


def names_people(target: str) -> bool:
    """Does this policy target stand for people (not a channel or external support)?"""
    return target.partition(":")[0] in ("oncall", "role", "contact")


def _pages(target: str) -> bool:
    return names_people(target) or target.startswith("channel:")


def nobody_for(target: str) -> str:
    kind, _, ref = target.partition(":")
    if kind == "role":
        return f"nobody has the role {ref}"
    if kind == "oncall" and ref:
        return f"nobody is on call in rotation {ref}"
    if kind == "oncall":
        return "nobody is on call (no rotation has anyone, no contact has the role oncall_engineer)"
    return f"'{target}' names nobody"


def _fix(target: str) -> str:
    kind, _, ref = target.partition(":")
    if kind == "role":
        return f"give a contact the role {ref} (people.contacts, docs/people.md)"
    return "add a rotation or give a contact the role oncall_engineer (docs/people.md)"


def possible_contacts(settings: Settings, target: str) -> list[Contact] | None:
    """Everyone a target can name at some time (None: the target names no people).

    `oncall` is every rotation member and override; the store's run-time overrides are not
    seen, which is why the timeline checks each page again when it is queued.
    """
    if not names_people(target):
        return None
    people = settings.people
    kind, _, ref = target.partition(":")
    if kind == "contact":
        found = people.contact(ref)
        return [found] if found else []
    if kind == "role":
        return [c for c in people.contacts if ref in c.roles]
    rotations = [r for r in people.rotations if not ref or r.name == ref]
    ids = {m for r in rotations for m in [*r.members, *(o.contact for o in r.overrides)]}
    found_ids = [c for c in people.contacts if c.id in ids]
    if not ref and not found_ids:
        # resolve_target falls back to the role when no rotation has anyone
        return [c for c in people.contacts if "oncall_engineer" in c.roles]
    return found_ids


def step_channels(settings: Settings, targets: Sequence[str]) -> list[str]:
    """The channels a step's messages go out on: `channel:` targets narrow the broadcast ones."""
    configured = settings.notify.channels
    named = [t.partition(":")[2] for t in targets if t.startswith("channel:")]
    if not named:
        return list(configured)
    personal = [n for n, c in configured.items() if c.kind in PER_CONTACT]
    return [*personal, *(n for n in named if n in configured)]


def reaches(settings: Settings, contact: Contact, channels: Iterable[str] | None = None) -> bool:
    configured = settings.notify.channels
    for name in configured if channels is None else channels:
        cfg = configured.get(name)
        if cfg is None:
            continue
        field = PER_CONTACT.get(cfg.kind)
        if field is None or getattr(contact, field):
            return True
    return False


def policies_in_use(settings: Settings) -> list[str]:
    """The escalation policies incidents get, one name each (unused ones page nobody anyway)."""
    return list(dict.fromkeys(settings.incidents.policy_for(s)[0] for s in (1, 2, 3)))


def step_reach(settings: Settings, step: EscalationStep) -> tuple[bool, list[str]]:
    """Does this step reach anybody, and why not for each of its targets that misses."""
    if not settings.notify.channels:
        return False, [NO_CHANNEL]
    channels = step_channels(settings, step.notify)
    configured = settings.notify.channels
    reached = any(configured[n].kind not in PER_CONTACT for n in channels)
    reasons: list[str] = []
    for target in step.notify:
        people = possible_contacts(settings, target)
        if people is None:
            continue
        if not people:
            reasons.append(nobody_for(target))
        for contact in people:
            if reaches(settings, contact, channels):
                reached = True
            else:
                reasons.append(f"no channel reaches {who(contact)}")
    return reached, list(dict.fromkeys(reasons))


def paging_problems(settings: Settings) -> list[str]:
    """Why an outage detected now would page nobody; empty when every first page reaches someone.

    The first step is the one that matters here: a policy whose later steps miss people still
    pages at detection (`config validate` warns about those steps).
    """
    if not settings.notify.channels:
        return [NOBODY]
    problems = []
    for name in policies_in_use(settings):
        steps = settings.incidents.policies[name].steps
        first = next((s for s in steps if any(_pages(t) for t in s.notify)), None)
        if first is None:
            problems.append(f"escalation policy '{name}' notifies nobody")
            continue
        reached, reasons = step_reach(settings, first)
        if not reached:
            problems.append(
                f"the first page of escalation policy '{name}' ({', '.join(first.notify)}) "
                f"reaches nobody: {'; '.join(reasons)}"
            )
    return problems


def paging_status(settings: Settings) -> dict[str, Any]:
    """The block `/healthz` and `status` carry: `ok` and the problems in words."""
    problems = paging_problems(settings)
    return {"ok": not problems, "problems": problems}


def config_warnings(settings: Settings) -> list[tuple[tuple[str | int, ...], str]]:
    """What `config validate` warns about, each with the key path it is about."""
    out: list[tuple[tuple[str | int, ...], str]] = []
    configured = settings.notify.channels
    if not configured:
        out.append(
            (
                ("notify", "channels"),
                "no notification channel is configured: nobody can be paged; "
                "add an email, chat, webhook or SMS channel (docs/notifications.md)",
            )
        )
    for name in policies_in_use(settings):
        for i, step in enumerate(settings.incidents.policies[name].steps):
            for target in step.notify:
                if possible_contacts(settings, target) == []:
                    what = step.description or f"step {i + 1}"
                    out.append(
                        (
                            ("incidents", "policies", name, "steps", i, "notify"),
                            f"'{target}': {nobody_for(target)}, so '{what}' pages no one "
                            f"through it; {_fix(target)}",
                        )
                    )
    if configured:
        needs = sorted({PER_CONTACT[c.kind] for c in configured.values() if c.kind in PER_CONTACT})
        for i, contact in enumerate(settings.people.contacts):
            if not reaches(settings, contact):
                out.append(
                    (
                        ("people", "contacts", i),
                        f"no configured channel reaches {who(contact)}; "
                        f"give them {' or '.join(needs)} or add a chat or webhook channel",
                    )
                )
    return out


def reached(contacts: Sequence[Contact], messages: Sequence[OutboundMessage]) -> list[Contact]:
    """The contacts a composed notification reaches: everyone when a broadcast carries it."""
    if any(m.contact is None for m in messages):
        return list(contacts)
    got = {m.contact for m in messages}
    return [c for c in contacts if c.id in got]


def undelivered(
    settings: Settings,
    contacts: Sequence[Contact],
    messages: Sequence[OutboundMessage],
    unheld: Sequence[str] = (),
) -> list[str]:
    """Why a notification misses people it was meant for (empty: it reaches all of them).

    `unheld` are the policy targets that named nobody at the time.
    """
    if not contacts and not unheld:
        return []
    got = {c.id for c in reached(contacts, messages)}
    reasons = [nobody_for(t) for t in unheld]
    reasons += [f"no channel reaches {who(c)}" for c in contacts if c.id not in got]
    if reasons and not settings.notify.channels:
        reasons.insert(0, NO_CHANNEL)
    return reasons
