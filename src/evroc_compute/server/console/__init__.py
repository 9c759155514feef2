"""The web console at /console/: a login that keeps a token in a session cookie, static
pages that talk to the same API, and the virtualmachines/console subresource they show."""
