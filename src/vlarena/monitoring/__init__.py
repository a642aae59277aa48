"""Monitoring as code: the catalogue of exported metrics, alert and recording rules, Grafana
dashboards and Prometheus scrape configs, written to `monitoring/` by `python -m vlarena.monitoring`."""
