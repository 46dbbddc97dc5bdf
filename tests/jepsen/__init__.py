"""Fault injection over real node OS processes, checked for linearizability (Jepsen-style).

A run: a 5-member rafted group on 5 node processes holding a key -> value map
(:class:`~jepsen.workload.KV`); a few client threads in the harness process write, cas
(``RaftedValue.command`` with an id reused on retry) and read (``RaftedValue.query``,
leader lease on), recording every operation in one :class:`lincheck.Recorder`; a nemesis
kills and replaces members, pauses the leader or a minority, cuts the network between
node groups; at the end every key is read once more, the members must hold the same map,
and :func:`lincheck.check` gives the verdict.  A failing run saves its history with the
nemesis events and the fault schedule as JSON (``python -m lincheck FILE`` replays it,
``scripts/torture.py --schedule FILE`` re-runs its faults).

Modules: ``workload`` (data module, clients, what each answer proves), ``cluster`` (the
group and its node processes), ``nemesis`` (the faults), ``netsplit`` (the transport's
partition switch), ``netns`` (real network faults in Linux network namespaces),
``campaign`` (one run), ``regressions`` (helpers of the regression tests and the
``--mutate`` self-tests).  Tests: ``test_partition_switch``, ``test_campaign`` (the
bounded CI runs), ``test_regressions`` (schedules the campaigns found).
"""
