//! One-step arbitration for the verification game (DESIGN.md §4).
//!
//! [`tree`]: the trace tree's shape, which the ledger's bisection game walks.

pub mod tree;
