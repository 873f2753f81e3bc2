//! Known-answer tests against published vectors, and exhaustive checks on small trees.

mod checkpoint;
mod cosignature;
mod merkle;
mod note;
mod tiles;
