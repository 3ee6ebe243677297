fn main() -> std::process::ExitCode {
    bip324_redirect::main()
}
