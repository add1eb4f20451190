"""runner-fleet's monitoring content: alert rules, their promtool tests and the Grafana dashboard."""
