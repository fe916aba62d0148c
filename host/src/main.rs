fn main() {
    println!("tether: not yet");
}
