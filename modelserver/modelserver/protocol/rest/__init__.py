"""The REST protocols, on one Flask app: `server` (probes, metrics, errors, body limits),
`v1_endpoints` (`/predict`, TF Serving / KServe V1), `v2_endpoints` (Open Inference Protocol),
`responses` (the probe statuses and error bodies they share), `page` (the page for people
at `/`, and its live figures)."""
