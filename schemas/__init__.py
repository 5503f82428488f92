"""The Avro contracts (``<name>.v<N>.avsc``), shipped as package data (precog.resources)."""
