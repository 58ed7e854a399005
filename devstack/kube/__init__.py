"""The local Kubernetes control plane for development, demos and tests.

Real components, built from Kubernetes' own Go modules by `make setup` (devstack/controlplane): etcd,
kube-apiserver and kube-controller-manager (namespace, garbage-collector, service-account and other
kubelet-free controllers). What no real component can do here, because no kubelet runs and no container
starts, is done by two small, clearly labelled stand-ins:
- ``controller``: the SIMULATED workload-status controller (field manager ``simulated (no kubelet)``);
- ``faultproxy``: a TCP proxy that cuts or stalls connections on demand, for outage tests.
The product never imports this package; it talks to clusters through a kubeconfig.
"""
