"""API key management, for the admin key only: create (the secret is shown once), list, revoke."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response

from api.auth import KeyRecord
from api.deps import Admin, State
from api.schemas import KeyCreate, KeyCreated, KeyOut

router = APIRouter(prefix="/v1/keys", tags=["api keys"])


def _out(record: KeyRecord) -> KeyOut:
    return KeyOut(id=record.id, name=record.name, prefix=record.prefix, read=record.read, write=record.write,
                  created_at=record.created_at)


@router.post("", response_model=KeyCreated, status_code=201)
def create_key(body: KeyCreate, state: State, admin: Admin) -> Any:
    """A new API key allowed to read `read` and write `write` (knowledge base names or "*")."""
    record = state.auth.store.create(body.name, body.read, body.write)
    return KeyCreated(**_out(record).model_dump(), key=record.secret or "")


@router.get("", response_model=list[KeyOut])
def list_keys(state: State, admin: Admin) -> Any:
    return [_out(r) for r in state.auth.store.list()]


@router.get("/{key_id}", response_model=KeyOut)
def get_key(key_id: str, state: State, admin: Admin) -> Any:
    return _out(state.auth.store.get(key_id))


@router.delete("/{key_id}", status_code=204)
def revoke_key(key_id: str, state: State, admin: Admin) -> Response:
    """Revoke a key: it stops working immediately."""
    state.auth.store.revoke(key_id)
    return Response(status_code=204)
