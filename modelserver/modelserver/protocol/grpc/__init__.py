"""The Open Inference Protocol over gRPC: `inference.proto`, its compiled descriptor
(`oip_descriptor`), the message classes (`messages`) and the service (`servicer`)."""
