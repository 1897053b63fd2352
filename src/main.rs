//! The `ira` binary: parse configuration, set up logging, run the agent.
fn main() {
    println!("ira {}", ira::AGENT_VERSION);
}
