"""A Kubernetes API emulator for development and tests: the official client talks to it over real HTTP.

It is NOT a cluster: no container runs, no scheduler, no kubelet. A clearly labelled simulated workload
controller moves Deployments/StatefulSets/DaemonSets/Jobs to a rolled-out (or failed) status. The product
never imports this package; it talks to real clusters through a kubeconfig. Differences from a real API
server are listed in README.md ("Kubernetes API emulator").
"""
