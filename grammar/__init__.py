"""Package data: the PromQL grammar (promql.lark), installed as mimird.grammar."""
