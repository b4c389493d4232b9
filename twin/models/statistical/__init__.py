"""The ``statistical`` world model (registered as ``statistical``).

- ``model``: ``StatisticalWorldModel`` — wiring, background fitting, requests.
- ``anomaly``: streaming anomaly detector (one per series).
- ``forecast``: per-series forecaster selection, cached state, fallback.
- ``capacity``: M/G/c what-if model of a SWIM-like web tier.
- ``calibration``: per-metric corrections from calibration events.
- ``nl``: natural-language questions answered from the store.
- ``diagnosis``: root-cause diagnosis.

Nothing is imported here, so importing the package stays cheap; heavy libraries
(scipy, statsmodels) are imported only when a fit runs.
"""
