"""Plans and predictions: what a planner needs from Simulate.

- ``roles``: which metric of a system plays which part (load, capacity, latency, ...);
- ``queue``: the structural queueing model, vectorised over a horizon;
- ``tier``: a system's queue calibrated from its telemetry, found through its roles;
- ``actions``: what an action does to a tier (capacity, quality knob) and its validation;
- ``effects``: effects of other actions, learned from the execution log;
- ``scenarios``: load scenarios that reshape the load forecast;
- ``utility``: SLOs and the utility that ranks plans;
- ``evaluate``: a plan over a horizon, arrays in and arrays out (pure);
- ``skill``: the measured error of past predictions (the ledger), for confidence;
- ``engine``: the glue between the store, the forecaster and the pieces above.
"""
