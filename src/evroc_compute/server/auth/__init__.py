"""Who is asking (authentication) and whether they may (authorization), as kube-apiserver does."""
