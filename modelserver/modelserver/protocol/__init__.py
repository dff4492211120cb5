"""The protocols the server speaks, around one data plane (as KServe lays them out).

- `dataplane`: what every protocol asks of the model, and all it reaches of it: readiness,
  metadata, size limits, inference on encoded images or pixel arrays (tensors back).
- `errors`: the errors a request can meet, defined once; each transport maps them.
- `rest`: the Flask app: probes and metrics, `/predict` and V1 (`v1_endpoints`), the Open
  Inference Protocol's REST form (`v2_endpoints`).
- `grpc`: the Open Inference Protocol's `inference.GRPCInferenceService`.
"""
