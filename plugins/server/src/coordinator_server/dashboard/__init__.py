"""The monitoring dashboard at ``/ui``: static pages shipped in this package and a JSON API
under ``/ui/api`` that reads what the coordinator already keeps (the metrics snapshot, the
store's audit log and events), so watching costs the execution path nothing."""
