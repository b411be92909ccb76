from enclave.cli.main import run

run()
