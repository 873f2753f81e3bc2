//! Fixture that no test policy grants: proves it ran by its exit code.
fn main() {
    println!("unlisted ran");
    std::process::exit(vm_tests::UNLISTED_EXIT);
}
