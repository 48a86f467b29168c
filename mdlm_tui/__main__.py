from mdlm_tui.cli import main

main()
