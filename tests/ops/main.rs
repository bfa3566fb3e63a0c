//! CPU ops and MoE layers: every fast path against its slow twin, routing groups.
//!
//! One test binary per group (each module was its own binary before): on 2 cores, linking the
//! runtime into fewer binaries is most of the saving. Run one module with
//! `cargo test --test ops <module>::`.

#[path = "../common/mod.rs"]
mod common;

mod ops_parity;
mod moe_parity;
mod grouped_moe;
mod quant_reference;
