"""Kubernetes plumbing shared by the cluster deployers (imported only when a deployer needs it):

- client.py  kubeconfig / in-cluster setup, namespace discovery, REST over plain dicts, and one
             place that turns API failures into typed FairingErrors with a fix (down, Forbidden,
             namespace or CRD missing, invalid names); resumable watches
- errors.py  the API server's failures as types (Unreachable, TimedOut, Unauthorized, Forbidden,
             Gone, NotFound, CRDNotInstalled, Conflict): retries decide on these, not on messages
- wait.py    waiting by watch (object + pods), with timeout and immediate pod-level failures
- logs.py    logs of every replica with prefixes, following as replicas start
- reasons.py the table from pod/job conditions to a sentence and a hint
"""
