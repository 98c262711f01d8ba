from tokenizer_pool.worker import main

main()
