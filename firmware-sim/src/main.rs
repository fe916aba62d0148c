fn main() {
    println!("tether-sim: not yet");
}
