"""Real networks for real VMs: a namespace per project, a bridge per zone subnet, taps, nft rules.

Pure decisions (names, rulesets) are apart from the side effects (`linux`), which run as root.
"""
