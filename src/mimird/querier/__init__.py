"""The querier: the merged read view of tenants' data (`queryable`) and the Prometheus HTTP API under
`<prometheus-http-prefix>` (`api`: queries, series, labels, metadata, exemplars, format_query;
`remoteread`; `cardinality`), with Prometheus's parameter parsing (`params`) and JSON (`jsonfmt`)."""

from mimird.querier.queryable import TenantQueryable

__all__ = ["TenantQueryable"]
