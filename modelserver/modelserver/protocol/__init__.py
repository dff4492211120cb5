"""The protocols the server speaks, around one data plane (as KServe lays them out).

- `dataplane`: what every protocol asks of the model: readiness, metadata, size limits,
  admission, inference on encoded images or pixel arrays (a probability tensor back).
- `errors`: the errors a request can meet, defined once; each transport maps them.
- `rest`: the Flask app: probes and metrics, `/predict` and V1 (`v1_endpoints`), the Open
  Inference Protocol's REST form (`v2_endpoints`).
- `grpc`: the Open Inference Protocol's `inference.GRPCInferenceService`.
"""
