/* SPDX-License-Identifier: MIT */
/*
 * kv.h - the kv workload: a Redis-protocol service (and client) on vCPU 0
 * over the net device's rings, its data in guest RAM (kv.c).
 */
#ifndef FERRY_VM_KV_H
#define FERRY_VM_KV_H

#include <stdint.h>

struct kv;
struct vm;
struct vcpu;

struct kv *kv_create(struct vm *vm);
void kv_destroy(struct kv *k);
uint64_t kv_serve(void *opaque, struct vcpu *c, uint64_t now, uint64_t *next_ns);

#endif /* FERRY_VM_KV_H */
