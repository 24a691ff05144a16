use std::io::BufRead;

fn main() {
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line).unwrap();
    println!("in: {}", line.trim_end_matches('\n'));
    for a in std::env::args().skip(1) {
        println!("arg: {}", a);
    }
    println!("héllo wörld ✓");
    std::process::exit(3);
}
