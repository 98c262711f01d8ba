from embedserve.tokenizer_pool.worker import main

main()
