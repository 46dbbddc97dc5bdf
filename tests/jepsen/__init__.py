"""Fault injection over real node OS processes, checked for linearizability (Jepsen-style).

``cluster`` starts and signals node processes, ``netsplit`` cuts the network between node
groups (the transport's partition switch, or Linux network namespaces), ``workload`` is the
key-value data module and the clients, ``nemesis`` the faults, ``campaign`` runs one
recorded, checked run.  ``scripts/torture.py`` runs longer campaigns.
"""
