"""JSON:API-style envelopes of store objects, shaped like Bento's answers (docs/bento-api.md, "Response envelope").

Callers hold store.lock while rendering, since subscribers change under concurrent batches.
"""

from __future__ import annotations

from typing import Any

from .store import Broadcast, EmailTemplate, FieldDef, Segment, Sequence, Store, Subscriber, Tag, Workflow
from .timeutil import iso


def visitor(sub: Subscriber) -> dict[str, Any]:
    return {
        "id": str(sub.id),
        "type": "visitors",
        "attributes": {
            "uuid": sub.uuid,
            "email": sub.email,
            "fields": dict(sub.fields) if sub.fields else None,  # Bento answers null for no fields
            "cached_tag_ids": [str(t) for t in sub.tag_ids],
            "unsubscribed_at": iso(sub.unsubscribed_at),
            "navigation_url": f"https://app.bentonow.com/account/visitors/{sub.uuid}",
            "created_at": iso(sub.created_at),
            "updated_at": iso(sub.updated_at),
        },
    }


def tag(t: Tag) -> dict[str, Any]:
    return {
        "id": str(t.id),
        "type": "tags",
        "attributes": {
            "name": t.name,
            "created_at": iso(t.created_at),
            "discarded_at": iso(t.discarded_at),
            "site_id": Store.SITE_ID,
        },
    }


def field_def(f: FieldDef) -> dict[str, Any]:
    return {
        "id": str(f.id),
        "type": "visitors-fields",
        "attributes": {"name": f.name, "key": f.key, "whitelisted": f.whitelisted, "created_at": iso(f.created_at)},
    }


def segment(s: Segment) -> dict[str, Any]:
    return {
        "id": str(s.id),
        "type": "segments",
        "attributes": {
            "name": s.name,
            "description": s.description,
            "visitor_event_query": s.visitor_event_query,
            "created_at": iso(s.created_at),
            "updated_at": iso(s.updated_at),
        },
    }


def broadcast(b: Broadcast, store: Store) -> dict[str, Any]:
    """No `status` in attributes: Bento does not return it, the caller knows which status it asked for."""
    if b.status == "draft":
        template: dict[str, Any] = {"template_id": b.template_id}
    else:
        t = store.templates[b.template_id]
        template = {"subject": t.subject, "to": b.to, "html": t.html}
    return {
        "id": str(b.id),
        "type": "broadcasts",
        "attributes": {
            "name": b.name,
            "share_url": b.share_url,
            "template": template,
            "created_at": iso(b.created_at),
            "sent_final_batch_at": iso(b.sent_final_batch_at),
            "send_at": iso(b.send_at),
            "stats": {"open_rate": b.open_rate},
        },
    }


def _template_refs(ids: list[int], store: Store) -> list[dict[str, Any]]:
    out = []
    for tid in ids:
        t = store.templates[tid]
        out.append({"id": t.id, "subject": t.subject, "stats": dict(t.stats) if t.stats is not None else None})
    return out


def sequence(s: Sequence, store: Store) -> dict[str, Any]:
    return {
        "id": str(s.id),
        "type": "sequences",
        "attributes": {
            "id": s.prefix_id,
            "name": s.name,
            "created_at": iso(s.created_at),
            "email_templates": _template_refs(s.template_ids, store),
        },
    }


def workflow(w: Workflow, store: Store) -> dict[str, Any]:
    return {
        "id": str(w.id),
        "type": "workflows",
        "attributes": {
            "name": w.name,
            "status": w.status,
            "created_at": iso(w.created_at),
            "email_templates": _template_refs(w.template_ids, store),
        },
    }


def email_template(t: EmailTemplate) -> dict[str, Any]:
    return {
        "id": str(t.id),
        "type": "email_template",
        "attributes": {
            "name": t.name,
            "subject": t.subject,
            "html": t.html,
            "created_at": iso(t.created_at),
            "stats": dict(t.stats) if t.stats is not None else None,
        },
    }
