#!/bin/bash
cd /work/main
for a in flash sigmoid gla; do
  /usr/bin/time -v node apps/gpt/dist/main.js train --data ../shared/data/tinyshakespeare.txt --backend native \
    --config small --attention $a --steps 500 --batch-size 32 --lr 2e-3 --eval-interval 100 --eval-iters 20 \
    --seed 1337 --out /tmp/variants/$a.safetensors > /tmp/variants/$a.log 2>&1
  node apps/gpt/dist/main.js sample --ckpt /tmp/variants/$a.safetensors --backend native --prompt "ROMEO:" --tokens 200 --seed 1 > /tmp/variants/$a.sample.txt 2>&1
done
echo done > /tmp/variants/DONE
