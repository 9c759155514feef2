"""The machinery below every reconciler: work queue, clock, informer caches, settings, writes.

Shared by the control plane (`controllers/`) and the host agents (`hosts/`), which know nothing
of each other.
"""
