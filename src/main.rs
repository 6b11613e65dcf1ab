fn main() {
    println!("etude");
}
