"""The call graph from spans: who calls whom, each component's own time and error origins
(join.py, components.py, stats.py, behind service_graph.ServiceGraph), and the search from
an anomaly down to its root cause (localize.py)."""
