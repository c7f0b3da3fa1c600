"""Host-side programs: simulators, parameter compiler, collector, decoders, benchmarks."""
