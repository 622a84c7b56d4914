"""Tenancy: who a request is for, from X-Scope-OrgID, validated exactly as Mimir (dskit) does.

A tenant ID becomes a directory name in the TSDB and the bucket, so the character set and the
rejection of `.` and `..` also keep a tenant from escaping its directory.
"""

from __future__ import annotations

from mimird.http.errors import HTTPError

MAX_TENANT_ID_LENGTH = 150
_ALLOWED = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!-_.*'()")


class TenantError(ValueError):
    """An invalid tenant ID, with Mimir's message."""


def validate_tenant_id(tenant: str) -> None:
    """Raise TenantError if `tenant` is not a valid Mimir tenant ID."""
    for char in tenant:
        if char not in _ALLOWED:
            raise TenantError(f"tenant ID '{tenant}' contains unsupported character '{char}'")
    if len(tenant.encode()) > MAX_TENANT_ID_LENGTH:
        raise TenantError(f"tenant ID is too long: max {MAX_TENANT_ID_LENGTH} characters")
    if tenant in (".", ".."):
        raise TenantError("tenant ID is '.' or '..'")


class TenantResolver:
    """Turns a request's X-Scope-OrgID header into its tenant IDs under the configured tenancy mode."""

    def __init__(self, multitenancy_enabled: bool, no_auth_tenant: str, federation_enabled: bool,
                 max_federated_tenants: int):
        self.multitenancy_enabled = multitenancy_enabled
        self.no_auth_tenant = no_auth_tenant
        self.federation_enabled = federation_enabled
        self.max_federated_tenants = max_federated_tenants

    def tenants(self, header: str | None, allow_federation: bool) -> list[str]:
        """Return the sorted, de-duplicated tenant IDs; raise HTTPError 401/422 as Mimir does."""
        if not self.multitenancy_enabled:
            return [self.no_auth_tenant]
        if not header:
            raise HTTPError(401, "no org id")
        ids = sorted(set(header.split("|")))
        for tenant in ids:
            if tenant == "":
                raise HTTPError(401, "no org id")
            try:
                validate_tenant_id(tenant)
            except TenantError as exc:
                raise HTTPError(401, str(exc)) from None
        if len(ids) > 1:
            limit = self.max_federated_tenants if (self.federation_enabled and allow_federation) else 1
            if limit and len(ids) > limit:
                raise HTTPError(422, f"too many tenant IDs present in the request. max: {limit} actual: {len(ids)}")
        return ids
