"""evroc-compute: the evroc Compute API (compute.evroclabs.net/v1alpha1), served Kubernetes-style."""

__version__ = "0.1.0"
