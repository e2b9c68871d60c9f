"""`cartsync check`: is a published dataset viewable in a browser, and is what is remote what is local?

Read-only. Every public-side check is a plain anonymous HTTP request, as a browser viewer sends it (web.py);
`--deep` reads every file back through the target's own authenticated client (deep.py). Modules: model
(findings), public (where a target is served), probes (the HTTP checks), zenodo (Zenodo's two URL kinds),
deep, advice (the exact fix), render (table, JSON), run (the pipeline).
"""
