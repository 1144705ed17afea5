//! The `strongroom` binary: wires the keystore, transport, store, coordination and API together.

fn main() {}
