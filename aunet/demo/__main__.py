from aunet.demo.demo import main

main()
