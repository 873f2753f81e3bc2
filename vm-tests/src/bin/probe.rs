//! Fixture granted by the test policies: proves it ran by its exit code.
fn main() {
    println!("probe ran");
    std::process::exit(vm_tests::PROBE_EXIT);
}
